src/inner/x.c
