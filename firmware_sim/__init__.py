"""A stand-in for LinkHub device firmware: it speaks the wire protocol and nothing else."""
