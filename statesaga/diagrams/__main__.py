"""`python -m statesaga.diagrams OUTDIR`: redraw the example sagas (see `make diagrams`)."""

from .examples import main

raise SystemExit(main())
