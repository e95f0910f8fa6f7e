"""Market data: the data contract, readers (CSV, Parquet, Tardis, Binance captures), bars and
returns, walk-the-book, enrichment and the seeded sample generator. Imports only `core`."""
