"""annotator: the moving/static trajectory annotator (session model, proposals, Qt app)."""
