"""aib-local: run Azure VM Image Builder templates locally."""
