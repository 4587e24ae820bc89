from sentiserve.cli import main

main()
