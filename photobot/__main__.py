from photobot.cli import main

raise SystemExit(main())
