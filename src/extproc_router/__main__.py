from extproc_router.cli import main

main()
