"""`attngan serve`: the web page and JSON API over AttnGANPipeline (app.py, batching.py, static/)."""
