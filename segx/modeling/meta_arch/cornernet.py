"""CornerNet (Law & Deng 2018)."""
