"""`python -m firmware_sim` is `linkhub-device`."""

from firmware_sim.cli import main

raise SystemExit(main())
