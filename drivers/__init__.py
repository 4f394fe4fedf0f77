"""Device side of the gateway: codecs, transports, drivers and simulators.

Always import submodules by their full name (``drivers.codecs.crc``): the
``codecs`` subpackage would shadow the stdlib module if ``drivers/`` itself
were put on ``sys.path``.
"""
