"""Stand-in application: proves the venv's interpreter and pip are usable."""
import importlib.util
import sys

print("prefix", sys.prefix)
print("pip", importlib.util.find_spec("pip") is not None)
