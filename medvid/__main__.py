from medvid.cli import main

raise SystemExit(main())
