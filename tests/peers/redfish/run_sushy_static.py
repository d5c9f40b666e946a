#!/usr/bin/env python3
"""Launch sushy-static (sushy-tools' mockup file server) with its request log on stderr.
sushy-static prints every request's headers and body to stdout, and its access lines to
stderr; the test harness keeps only stderr (stdout goes to /dev/null). With stdout pointed at
stderr, a test sees what was sent: the POST of an action and its body, the credentials used.
sushy-static answers every POST and PATCH with 204 and no headers, and has no DELETE (501).
All args go to sushy-static (--interface, --port, --mockup-files, --ssl-certificate, ...)."""
import sys
sys.stdout = sys.stderr
from sushy_tools.static.main import main
sys.exit(main())
