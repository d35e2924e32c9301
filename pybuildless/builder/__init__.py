"""The executor: runs a Dockerfile's stages and writes the image to its destinations."""
