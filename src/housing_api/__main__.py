from housing_api.cli import main

raise SystemExit(main())
