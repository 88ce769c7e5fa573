from knowlm.cli.main import main

main()
