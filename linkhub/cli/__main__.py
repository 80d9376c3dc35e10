"""`python -m linkhub.cli`: the same as the `linkhub` command."""

from linkhub.cli import main

raise SystemExit(main())
