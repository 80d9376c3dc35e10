"""LinkHub: the daemon that links home devices to an account with a short code."""
