"""The firmware side of the camera: pure cores that take ``now``, thin asyncio shells at the edges.

``device`` may import ``protocol``; it never imports ``sim``.
"""
