"""The pure, synchronous core of Quorum: no I/O, no clock reads, standard library only."""
