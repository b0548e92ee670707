"""What operators see: API response models, views built from the core, HTML pages. Pure."""
