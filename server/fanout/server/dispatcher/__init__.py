X="disp"
