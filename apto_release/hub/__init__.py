"""Publishing to the Hugging Face Hub: which repos a release writes, what may leave the machine, and the push."""
