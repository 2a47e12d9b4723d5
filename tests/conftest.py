"""Shared pytest setup. tests/ has no __init__.py, so pytest puts it on sys.path and test modules
import the helper modules beside them (httpserver, cifar_archives) by plain name."""
