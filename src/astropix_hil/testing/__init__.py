"""Helpers for testing DAQ and monitor programs against astropix-hil: the pytest plugin
(:mod:`.pytest_plugin`) and multicast channels on loopback or between network namespaces
(:mod:`.netpair`)."""
