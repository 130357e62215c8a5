"""The simulated world around the camera: media, sensors, scenarios, virtual time, fleets, the
evidence receiver, the fake bench microcontroller, and the command line.

Nothing imports ``sim`` except tests and scripts.
"""
