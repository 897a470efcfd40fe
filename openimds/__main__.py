from openimds.cli.main import main

raise SystemExit(main())
