from ctsam.cli import main

raise SystemExit(main())
