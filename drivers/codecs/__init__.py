"""Sans-I/O protocol codecs: bytes in, frames out. Stdlib only."""
