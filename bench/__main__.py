"""`python -m bench`: the side-by-side SIPp benchmark (see bench/runner.py)."""

from bench.runner import main

raise SystemExit(main())
