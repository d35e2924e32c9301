from pybuildless.cli import main

main()
