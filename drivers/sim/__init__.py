"""Device simulators that speak the real protocols over ptys or loopback TCP."""
