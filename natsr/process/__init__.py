"""Process plumbing: exit statuses and one-line errors (exits), TensorFlow's set-up (tflog)."""
