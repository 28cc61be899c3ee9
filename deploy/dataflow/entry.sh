#!/bin/sh
# Flex Template entry point: the launcher passes only --flags; lockstream
# wants its subcommand first. exec keeps /usr/local/bin/lockstream as the
# process the Beam SDK stages as the Dataflow worker.
set -e
exec /usr/local/bin/lockstream "${LOCKSTREAM_COMMAND:?set LOCKSTREAM_COMMAND to ingest, hourly or view}" --runner=dataflow "$@"
