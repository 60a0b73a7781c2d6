"""Deployment: the exported files (serving graph, converters) and the engines that run them."""
