from shogitrain.cli import main

main()
