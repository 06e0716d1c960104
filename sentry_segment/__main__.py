"""`python -m sentry_segment`: the same command as `sentry-segment`."""

from .cli import main

raise SystemExit(main())
