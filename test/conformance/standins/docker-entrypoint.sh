#!/bin/sh
# Stand-in for the nginx image's entrypoint, which runs its configuration
# scripts and then the command; the stand-in has none to run.
exec "$@"
