"""The campaign and click read side: what the API, the dashboard and the CSV files read.

The forwarder records clicks and keeps the campaign counters in the same
transaction (forwarder.recorder); everything here reads them, by index lookups
and keyset ranges, never by scanning clicks or by OFFSET.

    counters     the counters' shape both services share (breakdown caps, the
                 first-click histogram)
    stats        one campaign's statistics, from the counters
    summaries    the account's campaigns (headline figures and activity), and one
    clicks       a campaign's clicks, newest first, page by page
    recipients   a campaign's recipients (one link each), by phone number
    series       taps over time, from the per-minute rollup
    exports      every click and every recipient, a batch at a time (the CSV files)
    cursor       the one cursor codec of every paginated listing
"""
