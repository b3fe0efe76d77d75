"""Pure parsers and builders: bytes in, frozen dataclasses out, and back.

Nothing in this package opens a file, touches a device, reads the clock, logs or prints.
"""
