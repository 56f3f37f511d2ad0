from fem.cli import main

main()
