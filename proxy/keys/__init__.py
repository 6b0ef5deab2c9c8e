"""Who is calling: managed keys (values, stores), authentication, pass-through caller verification."""
