"""fetch: polls feeds, sitemaps and pages → raw pages."""
