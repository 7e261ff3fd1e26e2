"""Built-in convkit backends, one subpackage each; they register through the
``convkit.backends`` entry-point group like any third-party plugin."""
