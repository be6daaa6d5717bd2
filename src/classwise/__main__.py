from classwise.cli.main import main

main()
