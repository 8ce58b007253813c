"""`python -m bot` is the `quorum` command."""

from bot.cli import main

raise SystemExit(main())
