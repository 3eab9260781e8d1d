"""Stand-alone DAQ programs written the way the AstroPix team's programs are written (their own
imports only: ``ftd2xx`` or pyserial, no astropix_hil), run under ``apx-hil run-with-board``."""
