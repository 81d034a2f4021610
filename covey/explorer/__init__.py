"""The explorer: a read-only web dashboard of the network over an SQLite index of the suite's events.

`Indexer(chain).poll()` indexes events into `COVEY_HOME/explorer/index.sqlite` (resuming where it
stopped); `create_app(chain)` serves the pages and keeps indexing in a background thread;
`Explorer(chain, path)` gives the read models the pages use; `line_chart`/`bar_chart` draw SVG.
"""

from covey.explorer.app import create_app
from covey.explorer.charts import Bar, Series, bar_chart, line_chart
from covey.explorer.errors import NotFound
from covey.explorer.indexer import Indexer, PollResult, index_path
from covey.explorer.queries import Explorer

__all__ = [
    "Bar",
    "Explorer",
    "Indexer",
    "NotFound",
    "PollResult",
    "Series",
    "bar_chart",
    "create_app",
    "index_path",
    "line_chart",
]
