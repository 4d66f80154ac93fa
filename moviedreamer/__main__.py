from moviedreamer.cli import main

raise SystemExit(main())
