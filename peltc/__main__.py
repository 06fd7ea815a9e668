from peltc.cli import main

raise SystemExit(main())
