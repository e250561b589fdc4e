from rtinfer.cli import main

main()
