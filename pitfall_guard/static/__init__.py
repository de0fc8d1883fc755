"""The static side: reads scripts with libcst, never imports or runs them (nor torch)."""
