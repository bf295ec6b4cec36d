from pyrlang_zarr.cli import main

raise SystemExit(main())
