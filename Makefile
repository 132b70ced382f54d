# Convenience wrappers; dev.py is the source of truth (it needs nothing but Python 3.11+).
.PHONY: start stop test lint ci
start:
	python3 dev.py start
stop:
	python3 dev.py stop
test:
	python3 dev.py test
lint:
	python3 dev.py lint
ci:
	bash .ci/run
